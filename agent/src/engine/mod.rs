//! THE seam to Docker. Only this module holds a `bollard::Docker`; everything else speaks
//! in the small vocabulary below.
//!
//! Every call has a deadline sized for a busy engine (Batch's own agent failed under a burst
//! of 120 tasks with a 60 s client timeout), and create is retried on transient errors.
//! Streams (attach, wait, pull) have no overall deadline: they last as long as the work.

mod error;

pub use error::EngineError;

use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, ContainerSummary};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

/// Default deadline for one engine request (response headers). Batch raised its own to
/// 5 minutes after bursts of container creates timed out at 60 s (Azure/Batch#4).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Deadline of a health probe (ping, version).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// "No deadline" for a request: ten years (tokio saturates far larger values anyway).
const UNBOUNDED: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A chunk of container output.
#[derive(Debug, Clone)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// What `inspect` tells berth about a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerState {
    pub id: String,
    pub status: Option<String>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub pid: Option<i64>,
    /// When the container's process started (none if it never did).
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One pull progress event.
#[derive(Debug, Clone, Default)]
pub struct PullEvent {
    pub layer: Option<String>,
    pub status: Option<String>,
    pub current: Option<i64>,
    pub total: Option<i64>,
}

/// Registry credentials for one pull: a user name and password, or an identity token
/// (from a Docker credential helper). Never logged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub server: String,
    pub username: String,
    pub password: berth_proto::Secret,
    pub identity_token: Option<berth_proto::Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ server: {:?}, username: {:?}, secret: <redacted> }}",
            self.server, self.username
        )
    }
}

impl Credentials {
    fn to_bollard(&self) -> DockerCredentials {
        match &self.identity_token {
            Some(t) => DockerCredentials {
                identitytoken: Some(t.expose().to_string()),
                serveraddress: Some(self.server.clone()),
                ..Default::default()
            },
            None => DockerCredentials {
                username: Some(self.username.clone()),
                password: Some(self.password.expose().to_string()),
                serveraddress: Some(self.server.clone()),
                ..Default::default()
            },
        }
    }
}

/// Limits of one pull attempt (the total limit is the caller's). A pull that shows no
/// progress event at all within `first_progress`, or none for `inactivity` once started,
/// is abandoned; the engine cancels its pull when berth hangs up.
#[derive(Debug, Clone, Copy)]
pub struct PullLimits {
    pub first_progress: Duration,
    pub inactivity: Duration,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// The same connection without a request deadline: a pull's response headers may come
    /// late, and its limits are `PullLimits`, never a generic HTTP timeout.
    docker_unbounded: Docker,
    timeout: Duration,
    /// Where the engine was reached, for messages.
    pub host: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.host)
    }
}

/// bollard encodes X-Registry-Auth with standard base64; the engine decodes URL-safe base64
/// and silently drops what it cannot read (fussybeaver/bollard#169), which breaks
/// passwords whose encoding holds `+` or `/`. Rewrite the header to URL-safe.
fn fix_registry_auth(mut req: bollard::BollardRequest) -> bollard::BollardRequest {
    if let Some(v) = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
    {
        let fixed = v.replace('+', "-").replace('/', "_");
        if let Ok(h) = http::HeaderValue::from_str(&fixed) {
            req.headers_mut().insert("X-Registry-Auth", h);
        }
    }
    req
}

fn map_output(
    item: Result<bollard::container::LogOutput, bollard::errors::Error>,
    timeout: u64,
) -> Option<Result<Output, EngineError>> {
    use bollard::container::LogOutput;
    match item {
        Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
            Some(Ok(Output::Stdout(message.to_vec())))
        }
        Ok(LogOutput::StdErr { message }) => Some(Ok(Output::Stderr(message.to_vec()))),
        Ok(LogOutput::StdIn { .. }) => None,
        Err(e) => Some(Err(EngineError::from_bollard("output", timeout, e))),
    }
}

/// The engine address berth uses: `host`, else `DOCKER_HOST`, else the default socket.
pub fn resolve_host(host: Option<&str>) -> String {
    let env_host = std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty());
    host.map(str::to_string)
        .or(env_host)
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

/// The Unix socket path of an engine address (`unix:///path` or `/path`), if it is one.
pub fn socket_path(host: &str) -> Option<&str> {
    host.strip_prefix("unix://")
        .or(Some(host).filter(|h| h.starts_with('/')))
}

/// How long a create waits for a container name held by another create to come free.
pub const NAME_HELD: Duration = Duration::from_secs(60);

impl Engine {
    /// Connects to `host` (`unix:///path`, `tcp://h:p`, `http://h:p`), else `DOCKER_HOST`,
    /// else `/var/run/docker.sock`, and negotiates the API version.
    pub async fn connect(host: Option<&str>) -> Result<Engine, EngineError> {
        Self::connect_with_timeout(host, DEFAULT_CALL_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        host: Option<&str>,
        timeout: Duration,
    ) -> Result<Engine, EngineError> {
        let engine = Self::open(host, timeout)?;
        engine.negotiate().await?;
        Ok(engine)
    }

    /// The engine at `host` without talking to it: the daemon starts while the engine is
    /// still down, and [`Engine::negotiate`]s once it answers.
    pub fn open(host: Option<&str>, timeout: Duration) -> Result<Engine, EngineError> {
        let host = resolve_host(host);
        let secs = timeout.as_secs();
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_socket(path, secs, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(
                &host.replacen("tcp://", "http://", 1),
                secs,
                bollard::API_DEFAULT_VERSION,
            )
        } else if host.starts_with('/') {
            Docker::connect_with_socket(&host, secs, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(EngineError::Other(format!(
                "engine address {host:?} is not unix:///path or tcp://host:port"
            )));
        }
        .map_err(|e| EngineError::Unavailable(format!("{host}: {e}")))?
        .with_request_modifier(fix_registry_auth);
        Ok(Engine {
            docker_unbounded: docker.clone().with_timeout(UNBOUNDED),
            docker,
            timeout,
            host,
        })
    }

    /// Agrees on the API version with the engine (an older engine lowers it). Every clone
    /// of this `Engine` shares the result: bollard keeps the version behind one `Arc`.
    pub async fn negotiate(&self) -> Result<(), EngineError> {
        let secs = self.timeout.as_secs();
        let answered = tokio::time::timeout(PROBE_TIMEOUT, self.docker.clone().negotiate_version())
            .await
            .map_err(|_| EngineError::Timeout {
                op: "version",
                secs: PROBE_TIMEOUT.as_secs(),
            })?;
        answered.map(|_| ()).map_err(|e| {
            EngineError::Unavailable(format!(
                "{}: {}",
                self.host,
                EngineError::from_bollard("version", secs, e)
            ))
        })
    }

    /// Whether the engine's listener takes a new connection. Unlike a request, which may
    /// ride a pooled connection that a stopping engine still serves, this sees the moment
    /// dockerd stops listening, which is before it stops its containers.
    pub async fn listening(&self) -> bool {
        let connect = async {
            if let Some(path) = socket_path(&self.host) {
                tokio::net::UnixStream::connect(path).await.map(drop)
            } else {
                let addr = self
                    .host
                    .trim_start_matches("tcp://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                tokio::net::TcpStream::connect(addr).await.map(drop)
            }
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, connect).await,
            Ok(Ok(()))
        )
    }

    /// Whether the engine answers a ping within a few seconds: the health probe, which
    /// must not wait out the long deadline meant for a busy engine's creates.
    pub async fn probe(&self) -> Result<(), EngineError> {
        match tokio::time::timeout(PROBE_TIMEOUT, self.docker.ping()).await {
            Ok(r) => r.map(|_| ()).map_err(|e| self.err("ping", e)),
            Err(_) => Err(EngineError::Timeout {
                op: "ping",
                secs: PROBE_TIMEOUT.as_secs(),
            }),
        }
    }

    fn err(&self, op: &'static str, e: bollard::errors::Error) -> EngineError {
        EngineError::from_bollard(op, self.timeout.as_secs(), e)
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.err("ping", e))
    }

    /// The names of the engine's runtimes (`runc`, `nvidia`, ...).
    pub async fn runtimes(&self) -> Result<Vec<String>, EngineError> {
        let info = self.docker.info().await.map_err(|e| self.err("info", e))?;
        Ok(info
            .runtimes
            .map(|r| r.into_keys().collect())
            .unwrap_or_default())
    }

    /// The image's `Env` (`K=V` entries); empty when the image sets none.
    pub async fn image_env(&self, image: &str) -> Result<Vec<String>, EngineError> {
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| self.err("inspect image", e))?;
        Ok(i.config.and_then(|c| c.env).unwrap_or_default())
    }

    /// Whether the image is present locally.
    pub async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => match self.err("inspect image", e) {
                EngineError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Pulls `repository:tag_or_digest`, calling `progress` for each event, within `limits`.
    pub async fn pull(
        &self,
        repository: &str,
        tag_or_digest: &str,
        platform: Option<&str>,
        creds: Option<&Credentials>,
        limits: PullLimits,
        mut progress: impl FnMut(PullEvent),
    ) -> Result<(), EngineError> {
        let mut b = CreateImageOptionsBuilder::default()
            .from_image(repository)
            .tag(tag_or_digest);
        if let Some(p) = platform {
            b = b.platform(p);
        }
        let creds = creds.map(Credentials::to_bollard);
        let mut s = self
            .docker_unbounded
            .create_image(Some(b.build()), None, creds);
        let mut started = false;
        loop {
            let (limit, which) = if started {
                (limits.inactivity, "inactivity")
            } else {
                (limits.first_progress, "first progress")
            };
            let ev = match tokio::time::timeout(limit, s.next()).await {
                Err(_) => {
                    return Err(EngineError::PullStalled {
                        limit: which,
                        secs: limit.as_secs_f64(),
                    })
                }
                Ok(None) => return Ok(()),
                Ok(Some(ev)) => ev.map_err(|e| self.err("pull", e))?,
            };
            started = true;
            if let Some(e) = ev.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Stream(e));
            }
            progress(PullEvent {
                layer: ev.id,
                status: ev.status,
                current: ev.progress_detail.as_ref().and_then(|p| p.current),
                total: ev.progress_detail.as_ref().and_then(|p| p.total),
            });
        }
    }

    /// Asks the registry, through the engine, whether `image` can be pulled with `creds`
    /// (the manifest is resolved; nothing is downloaded). Returns the manifest digest.
    pub async fn registry_check(
        &self,
        image: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, EngineError> {
        self.docker
            .inspect_registry_image(image, creds.map(Credentials::to_bollard))
            .await
            .map(|d| d.descriptor.digest.unwrap_or_default())
            .map_err(|e| self.err("registry check", e))
    }

    /// Creates a container with a fixed name. Transient failures are retried with backoff;
    /// a leftover container holding the name is removed first (it can only be ours: the
    /// name carries the node id and attempt). The name may also be held by a create still
    /// under way, sent by an agent process that died (the engine reserves the name before
    /// the container can be found or removed): that one is waited for, up to
    /// [`NAME_HELD`], and then removed.
    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
        platform: Option<&str>,
    ) -> Result<String, EngineError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        let mut held =
            crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
        let began = tokio::time::Instant::now();
        let mut conflicts = 0;
        loop {
            attempt += 1;
            let mut b = CreateContainerOptionsBuilder::default().name(name);
            if let Some(p) = platform {
                b = b.platform(p);
            }
            match self
                .docker
                .create_container(Some(b.build()), body.clone())
                .await
                .map_err(|e| self.err("create", e))
            {
                Ok(r) => return Ok(r.id),
                Err(EngineError::Conflict(m))
                    if m.contains("already in use") && began.elapsed() < NAME_HELD =>
                {
                    tracing::warn!(
                        container = name,
                        "removing a leftover container that holds this task's name"
                    );
                    self.remove(name).await?;
                    // Gone at once unless a create in flight holds the name: give it time.
                    conflicts += 1;
                    if conflicts > 1 {
                        tokio::time::sleep(held.next_delay()).await;
                    }
                }
                Err(e) if e.is_transient() && attempt < 5 => {
                    tracing::warn!(container = name, attempt, error = %e, "create failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The container's output from its first byte, read from the engine's log store (so it
    /// can be opened after start), following until the container stops when `follow`.
    /// A follow stream can end before the last bytes (seen on 20.10 with fast exits):
    /// read once more without `follow` after exit to complete it (`task::logs::complete`).
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
    ) -> Pin<Box<dyn Stream<Item = Result<Output, EngineError>> + Send>> {
        self.logs_of(id, follow, [true, true])
    }

    /// [`Engine::logs`] of only the chosen streams (`[stdout, stderr]`, at least one).
    pub fn logs_of(
        &self,
        id: &str,
        follow: bool,
        [stdout, stderr]: [bool; 2],
    ) -> Pin<Box<dyn Stream<Item = Result<Output, EngineError>> + Send>> {
        let opts = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(stdout)
            .stderr(stderr)
            .build();
        let timeout = self.timeout.as_secs();
        Box::pin(
            self.docker
                .logs(id, Some(opts))
                .filter_map(move |item| async move { map_output(item, timeout) }),
        )
    }

    /// Attaches to stdout/stderr (call before `start`). Used only when the container has no
    /// readable log store (`--log-driver none`); bytes written before the attach is wired
    /// can be missed, which is why `logs` is preferred.
    pub async fn attach(
        &self,
        id: &str,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Output, EngineError>> + Send>>, EngineError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let r = self
            .docker
            .attach_container(id, Some(opts))
            .await
            .map_err(|e| self.err("attach", e))?;
        let timeout = self.timeout.as_secs();
        Ok(Box::pin(r.output.filter_map(move |item| async move {
            map_output(item, timeout)
        })))
    }

    /// A future that resolves with the exit code once the container is not running. Call it
    /// after `start`: `not-running` answers at once for a container that already exited, so
    /// a fast exit cannot be missed. (bollard sends the request only when the stream is
    /// first polled, so a `next-exit` wait "subscribed" before start can miss the exit.)
    pub fn wait(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<i64, EngineError>> + Send + 'static {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let s = self.docker.wait_container(id, Some(opts));
        let timeout = self.timeout.as_secs();
        async move {
            futures_util::pin_mut!(s);
            match s.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // bollard turns a non-zero exit into an error; it is not one for berth.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(EngineError::from_bollard("wait", timeout, e)),
                None => Err(EngineError::Stream(
                    "the wait stream ended without an exit code".into(),
                )),
            }
        }
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.err("start", e))
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerState, EngineError> {
        let r = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.err("inspect", e))?;
        let s = r.state.unwrap_or_default();
        Ok(ContainerState {
            id: r.id.unwrap_or_else(|| id.to_string()),
            status: s.status.map(|st| st.to_string()),
            exit_code: s.exit_code,
            oom_killed: s.oom_killed.unwrap_or(false),
            error: s.error.filter(|e| !e.is_empty()),
            pid: s.pid.filter(|p| *p > 0),
            started_at: s
                .started_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .filter(|t| t.timestamp() > 0),
        })
    }

    /// Sends SIGTERM (or the container's stop signal), then SIGKILL after `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptionsBuilder::default().t(t).build()),
            )
            .await
        {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.err("stop", e)),
        }
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        self.docker
            .kill_container(
                id,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal(signal)
                        .build(),
                ),
            )
            .await
            .map_err(|e| self.err("kill", e))
    }

    /// Removes a container (forced, with its anonymous volumes). Gone already is success.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            match self
                .docker
                .remove_container(id, Some(opts.clone()))
                .await
                .map_err(|e| self.err("remove", e))
            {
                Ok(()) | Err(EngineError::NotFound(_)) => return Ok(()),
                // "removal already in progress" is a 409; wait for it to finish.
                Err(e)
                    if (e.is_transient() || matches!(e, EngineError::Conflict(_)))
                        && attempt < 6 =>
                {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    /// Containers (running or not) carrying every `key=value` label given.
    pub async fn list_labelled(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.err("list", e))
    }

    /// The raw client, for the integration tests' baseline measurements only.
    #[doc(hidden)]
    pub fn raw(&self) -> &Docker {
        &self.docker
    }
}
