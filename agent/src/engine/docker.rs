//! [`Docker`]: the [`Engine`] on the Docker Engine API (bollard). The only code that holds
//! a `bollard::Docker`, and the only place that reads the engine's statuses and messages
//! to classify its errors ([`from_bollard`], [`classify_pull`]).
//!
//! Every call has a deadline sized for a busy engine (Batch's own agent failed under a burst
//! of 120 tasks with a 60 s client timeout), and create is retried on transient errors.
//! Streams (attach, wait, pull) have no overall deadline: they last as long as the work.
#![allow(clippy::disallowed_types)] // the one module that may hold a bollard client

use super::archive::{self, ArchiveError, Entry};
use super::{
    ContainerState, ContainerSummary, Credentials, Engine, EngineError, Output, OutputStream,
    PullEvent, PullLimits,
};
use crate::error_chain::{Cause, Chain};
use bollard::auth::DockerCredentials;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// Default deadline for one engine request (response headers). Batch raised its own to
/// 5 minutes after bursts of container creates timed out at 60 s (Azure/Batch#4).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Deadline of a health probe (ping, version).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a create waits for a container name held by another create to come free.
pub const NAME_HELD: Duration = Duration::from_secs(60);

/// The most symbolic links followed to a file inside a container (the kernel's own
/// limit for one path lookup).
const MAX_LINKS: usize = 40;

/// Room for the tar headers around a file read from a container.
const TAR_SLACK: u64 = 64 << 10;

/// "No deadline" for a request: ten years (tokio saturates far larger values anyway).
const UNBOUNDED: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn to_bollard(c: &Credentials) -> DockerCredentials {
    match &c.identity_token {
        Some(t) => DockerCredentials {
            identitytoken: Some(t.expose().to_string()),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        },
        None => DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.expose().to_string()),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        },
    }
}

/// The Docker engine at one address.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    /// The same connection without a request deadline: a pull's response headers may come
    /// late, and its limits are `PullLimits`, never a generic HTTP timeout.
    client_unbounded: bollard::Docker,
    timeout: Duration,
    host: String,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Docker({})", self.host)
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

/// One item of a multiplexed output stream (berth never asks for a TTY, so every byte
/// the process wrote comes in a stdout or stderr frame). bollard hands anything else over
/// as `Console`: the engine's own error frame (stream type 3, "Error grabbing logs: ..."),
/// or what is left of a frame cut off. That is the engine's, not the task's: an error.
fn map_output(
    item: Result<bollard::container::LogOutput, bollard::errors::Error>,
    timeout: u64,
) -> Option<Result<Output, EngineError>> {
    use bollard::container::LogOutput;
    match item {
        Ok(LogOutput::StdOut { message }) => Some(Ok(Output::Stdout(message.to_vec()))),
        Ok(LogOutput::StdErr { message }) => Some(Ok(Output::Stderr(message.to_vec()))),
        Ok(LogOutput::StdIn { .. }) => None,
        Ok(LogOutput::Console { message }) => Some(Err(unframed(&message))),
        Err(e) => Some(Err(from_bollard("output", timeout, e))),
    }
}

/// The error an unframed stream item stands for: the engine's words when it is an error
/// frame (type 3, an 8-byte header), else how much arrived outside any frame.
fn unframed(message: &[u8]) -> EngineError {
    match message {
        [3, _, _, _, _, _, _, _, text @ ..] => EngineError::Stream(format!(
            "the engine reported an error in the output stream: {}",
            String::from_utf8_lossy(text).trim_end()
        )),
        _ => EngineError::Stream(format!(
            "{} bytes arrived outside the output stream's frames",
            message.len()
        )),
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

/// Sorts a bollard error by the engine's status and words. The one place that reads an
/// engine error's text.
pub(crate) fn from_bollard(
    op: &'static str,
    timeout_secs: u64,
    e: bollard::errors::Error,
) -> EngineError {
    use bollard::errors::Error as B;
    match e {
        B::DockerResponseServerError {
            status_code: 404,
            message,
        } => {
            // "No such image: x" (create, inspect image) vs "No such container: x" (whose
            // name may hold any word).
            if message.to_ascii_lowercase().starts_with("no such image") {
                EngineError::ImageNotFound(message)
            } else {
                EngineError::NotFound(message)
            }
        }
        B::DockerResponseServerError {
            status_code: 409,
            message,
        } => {
            if message.contains("already in use") {
                EngineError::NameInUse(message)
            } else {
                EngineError::Conflict(message)
            }
        }
        B::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Refused {
            status: status_code,
            message,
        },
        B::RequestTimeoutError => EngineError::Timeout {
            op,
            secs: timeout_secs,
        },
        B::DockerStreamError { error } => EngineError::Stream(error),
        B::IOError { err } => EngineError::Unavailable(Cause::new(err)),
        B::HyperResponseError { err } => EngineError::Unavailable(Cause::new(err)),
        other => {
            // hyper's "client error (Connect)" as much as "connection refused".
            let l = other.to_string().to_ascii_lowercase();
            if l.contains("connect") || l.contains("no such file") {
                EngineError::Unavailable(Cause::new(other))
            } else {
                EngineError::Other(Cause::new(other))
            }
        }
    }
}

/// Sorts a failed pull or registry check by what the registry said through the engine:
/// the engine passes the registry's answer on as text, in a 4xx/5xx or inside the stream.
pub(crate) fn classify_pull(e: EngineError) -> EngineError {
    let message = match &e {
        EngineError::Refused { message, .. }
        | EngineError::Stream(message)
        | EngineError::NotFound(message) => message.clone(),
        EngineError::Other(cause) => cause.to_string(),
        _ => return e,
    };
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&[
        "unauthorized",
        "authentication required",
        "denied",
        "incorrect username or password",
        "no basic auth credentials",
    ]) {
        return EngineError::RegistryDenied(message);
    }
    if matches!(e, EngineError::NotFound(_))
        || has(&[
            "manifest unknown",
            "not found",
            "does not exist",
            "no such image",
            "name unknown",
        ])
    {
        return EngineError::ImageNotFound(message);
    }
    // Throttling, 5xx, refused or reset connections, timeouts: worth another try.
    if e.is_transient()
        || has(&[
            "connection refused",
            "connection reset",
            "timeout",
            "timed out",
            "i/o timeout",
            "toomanyrequests",
            "too many requests",
            "server is busy",
            "service unavailable",
            "bad gateway",
            "eof",
            "no route to host",
            "temporary failure",
        ])
    {
        return EngineError::RegistryUnavailable(message);
    }
    e
}

impl Docker {
    /// Connects to `host` (`unix:///path`, `tcp://h:p`, `http://h:p`), else `DOCKER_HOST`,
    /// else `/var/run/docker.sock`, and negotiates the API version.
    pub async fn connect(host: Option<&str>) -> Result<Docker, EngineError> {
        Self::connect_with_timeout(host, DEFAULT_CALL_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        host: Option<&str>,
        timeout: Duration,
    ) -> Result<Docker, EngineError> {
        let engine = Self::open(host, timeout)?;
        engine.negotiate().await?;
        Ok(engine)
    }

    /// The engine at `host` without talking to it: the daemon starts while the engine is
    /// still down, and [`Engine::negotiate`]s once it answers.
    pub fn open(host: Option<&str>, timeout: Duration) -> Result<Docker, EngineError> {
        let host = resolve_host(host);
        let secs = timeout.as_secs();
        let client = if let Some(path) = host.strip_prefix("unix://") {
            bollard::Docker::connect_with_socket(path, secs, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            bollard::Docker::connect_with_http(
                &host.replacen("tcp://", "http://", 1),
                secs,
                bollard::API_DEFAULT_VERSION,
            )
        } else if host.starts_with('/') {
            bollard::Docker::connect_with_socket(&host, secs, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(EngineError::Other(Cause::msg(format!(
                "engine address {host:?} is not unix:///path or tcp://host:port"
            ))));
        }
        .map_err(|e| EngineError::Unavailable(Cause::at(&host, e)))?
        .with_request_modifier(fix_registry_auth);
        Ok(Docker {
            client_unbounded: client.clone().with_timeout(UNBOUNDED),
            client,
            timeout,
            host,
        })
    }

    fn err(&self, op: &'static str, e: bollard::errors::Error) -> EngineError {
        from_bollard(op, self.timeout.as_secs(), e)
    }

    /// The archive of `path` inside container `id`, whole, at most `limit` bytes of file.
    async fn archive(&self, id: &str, path: &str, limit: u64) -> Result<Vec<u8>, EngineError> {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut s = self.client.download_from_container(id, Some(opts));
        let mut tar = Vec::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| match self.err("archive", e) {
                // "Could not find the file P in container C" vs "No such container: C".
                EngineError::NotFound(m)
                    if !m.to_ascii_lowercase().starts_with("no such container") =>
                {
                    EngineError::NoSuchFile(m)
                }
                e => e,
            })?;
            tar.extend_from_slice(&chunk);
            if tar.len() as u64 > limit.saturating_add(TAR_SLACK) {
                return Err(EngineError::FileTooLarge {
                    path: path.to_string(),
                    limit,
                });
            }
        }
        Ok(tar)
    }

    /// The raw client, for the integration tests' baseline measurements only.
    #[doc(hidden)]
    pub fn raw(&self) -> &bollard::Docker {
        &self.client
    }
}

impl Engine for Docker {
    fn host(&self) -> &str {
        &self.host
    }

    /// Every clone of this `Docker` shares the result: bollard keeps the version behind
    /// one `Arc`.
    fn negotiate(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let secs = self.timeout.as_secs();
            let answered =
                tokio::time::timeout(PROBE_TIMEOUT, self.client.clone().negotiate_version())
                    .await
                    .map_err(|_| EngineError::Timeout {
                        op: "version",
                        secs: PROBE_TIMEOUT.as_secs(),
                    })?;
            answered.map(|_| ()).map_err(|e| {
                // Unavailable already: the host says where, and the cause stays one level.
                let cause = match from_bollard("version", secs, e) {
                    EngineError::Unavailable(cause) => cause,
                    other => Cause::new(other),
                };
                EngineError::Unavailable(Cause::at(&self.host, cause))
            })
        })
    }

    /// Unlike a request, which may ride a pooled connection that a stopping engine still
    /// serves, a new connection sees the moment dockerd stops listening.
    fn listening(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
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
        })
    }

    /// A ping within a few seconds: the probe must not wait out the long deadline meant
    /// for a busy engine's creates.
    fn probe(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            match tokio::time::timeout(PROBE_TIMEOUT, self.client.ping()).await {
                Ok(r) => r.map(|_| ()).map_err(|e| self.err("ping", e)),
                Err(_) => Err(EngineError::Timeout {
                    op: "ping",
                    secs: PROBE_TIMEOUT.as_secs(),
                }),
            }
        })
    }

    fn runtimes(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>> {
        Box::pin(async move {
            let info = self.client.info().await.map_err(|e| self.err("info", e))?;
            Ok(info
                .runtimes
                .map(|r| r.into_keys().collect())
                .unwrap_or_default())
        })
    }

    fn image_env<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Vec<String>, EngineError>> {
        Box::pin(async move {
            let i = self
                .client
                .inspect_image(image)
                .await
                .map_err(|e| self.err("inspect image", e))?;
            Ok(i.config.and_then(|c| c.env).unwrap_or_default())
        })
    }

    fn image_present<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            match self.client.inspect_image(image).await {
                Ok(_) => Ok(true),
                Err(e) => match self.err("inspect image", e) {
                    EngineError::NotFound(_) | EngineError::ImageNotFound(_) => Ok(false),
                    other => Err(other),
                },
            }
        })
    }

    fn pull<'a>(
        &'a self,
        repository: &'a str,
        tag_or_digest: &'a str,
        platform: Option<&'a str>,
        creds: Option<&'a Credentials>,
        limits: PullLimits,
        progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut b = CreateImageOptionsBuilder::default()
                .from_image(repository)
                .tag(tag_or_digest);
            if let Some(p) = platform {
                b = b.platform(p);
            }
            let creds = creds.map(to_bollard);
            let mut s = self
                .client_unbounded
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
                    Ok(Some(ev)) => ev.map_err(|e| classify_pull(self.err("pull", e)))?,
                };
                started = true;
                if let Some(e) = ev.error_detail.and_then(|d| d.message) {
                    return Err(classify_pull(EngineError::Stream(e)));
                }
                progress(PullEvent {
                    layer: ev.id,
                    status: ev.status,
                    current: ev.progress_detail.as_ref().and_then(|p| p.current),
                    total: ev.progress_detail.as_ref().and_then(|p| p.total),
                });
            }
        })
    }

    fn registry_check<'a>(
        &'a self,
        image: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async move {
            self.client
                .inspect_registry_image(image, creds.map(to_bollard))
                .await
                .map(|d| d.descriptor.digest.unwrap_or_default())
                .map_err(|e| classify_pull(self.err("registry check", e)))
        })
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        body: ContainerCreateBody,
        platform: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async move {
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
                    .client
                    .create_container(Some(b.build()), body.clone())
                    .await
                    .map_err(|e| self.err("create", e))
                {
                    Ok(r) => return Ok(r.id),
                    Err(EngineError::NameInUse(_)) if began.elapsed() < NAME_HELD => {
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
                        tracing::warn!(container = name, attempt, error = %Chain(&e), "create failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// Read only where the container's own stream could not be (an agent restart, the
    /// engine away): what the store holds depends on its driver and options (json-file
    /// writes bytes that are not UTF-8 as U+FFFD, rotation drops the oldest), which is
    /// why `task::logs::from_store` checks it against what berth already has.
    fn logs_of(&self, id: &str, follow: bool, [stdout, stderr]: [bool; 2]) -> OutputStream {
        let opts = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(stdout)
            .stderr(stderr)
            .build();
        let timeout = self.timeout.as_secs();
        Box::pin(
            self.client
                .logs(id, Some(opts))
                .filter_map(move |item| async move { map_output(item, timeout) }),
        )
    }

    /// The container's own stdout and stderr, as `docker run` reads them: the exact bytes,
    /// whatever the log driver, with backpressure (a slow reader slows the writer; nothing
    /// is dropped). No `logs`: only the live stream. The engine wires the stream before it
    /// answers, so an attach made before start sees the first byte.
    fn attach<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<OutputStream, EngineError>> {
        Box::pin(async move {
            let opts = AttachContainerOptionsBuilder::default()
                .stream(true)
                .stdout(true)
                .stderr(true)
                .build();
            let r = self
                .client
                .attach_container(id, Some(opts))
                .await
                .map_err(|e| self.err("attach", e))?;
            let timeout = self.timeout.as_secs();
            let s: OutputStream = Box::pin(
                r.output
                    .filter_map(move |item| async move { map_output(item, timeout) }),
            );
            Ok(s)
        })
    }

    /// Call it after `start`: `not-running` answers at once for a container that already
    /// exited, so a fast exit cannot be missed. (bollard sends the request only when the
    /// stream is first polled, so a `next-exit` wait "subscribed" before start can miss
    /// the exit.)
    fn wait(&self, id: &str) -> BoxFuture<'static, Result<i64, EngineError>> {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let s = self.client.wait_container(id, Some(opts));
        let timeout = self.timeout.as_secs();
        Box::pin(async move {
            futures_util::pin_mut!(s);
            match s.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // bollard turns a non-zero exit into an error; it is not one for berth.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(from_bollard("wait", timeout, e)),
                None => Err(EngineError::Stream(
                    "the wait stream ended without an exit code".into(),
                )),
            }
        })
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.client
                .start_container(id, None)
                .await
                .map_err(|e| self.err("start", e))
        })
    }

    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerState, EngineError>> {
        Box::pin(async move {
            let r = self
                .client
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
        })
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
            match self
                .client
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
        })
    }

    fn kill<'a>(&'a self, id: &'a str, signal: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.client
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
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let opts = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            let mut delay = Duration::from_millis(200);
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self
                    .client
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
        })
    }

    fn list_labelled<'a>(
        &'a self,
        labels: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        Box::pin(async move {
            let filters: HashMap<String, Vec<String>> = HashMap::from([(
                "label".to_string(),
                labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            )]);
            let opts = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let list = self
                .client
                .list_containers(Some(opts))
                .await
                .map_err(|e| self.err("list", e))?;
            Ok(list
                .into_iter()
                .map(|c| ContainerSummary {
                    id: c.id.unwrap_or_default(),
                    names: c.names.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()),
                    labels: c.labels.unwrap_or_default(),
                })
                .filter(|c| !c.id.is_empty())
                .collect())
        })
    }

    fn read_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, EngineError>> {
        Box::pin(async move {
            let mut at = path.to_string();
            for _ in 0..MAX_LINKS {
                let tar = self.archive(id, &at, limit).await?;
                match archive::first_entry(&tar, limit) {
                    Ok(Entry::File(bytes)) => return Ok(bytes),
                    Ok(Entry::Link(target)) => at = archive::link_target(&at, &target),
                    Ok(Entry::Other) => {
                        return Err(EngineError::NoSuchFile(format!("{at}: not a regular file")))
                    }
                    Err(ArchiveError::TooLarge(_)) => {
                        return Err(EngineError::FileTooLarge { path: at, limit })
                    }
                    Err(e) => return Err(EngineError::Other(Cause::msg(format!("{at}: {e}")))),
                }
            }
            Err(EngineError::NoSuchFile(format!(
                "{path}: more than {MAX_LINKS} symbolic links"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stopped engine (its socket file left, nothing listening): unavailable, the
    /// address, then the client's causes down to the refused connection, each once.
    #[tokio::test]
    async fn an_engine_away_keeps_its_causes_once() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let host = format!("unix://{}", sock.display());
        let e = Docker::open(Some(&host), Duration::from_secs(5))
            .unwrap()
            .negotiate()
            .await
            .unwrap_err();
        assert!(e.is_engine_down(), "{e:?}");
        let levels = crate::error_chain::levels(&e);
        assert_eq!(
            levels[..2],
            ["the Docker engine is unavailable", &host],
            "{levels:?}"
        );
        let text = crate::error_chain::chain(&e);
        assert_eq!(text.matches("unavailable").count(), 1, "{text}");
        assert!(
            std::error::Error::source(&e).is_some() && text.contains("refused"),
            "{text}"
        );
        assert_eq!(e.message(), text, "failure details show the whole chain");
    }

    fn server(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    /// Only stdout and stderr frames are the task's bytes; the engine's error frame (what
    /// `docker logs` prints as "error from daemon in stream") is an error, never output.
    #[test]
    fn only_stdout_and_stderr_frames_are_output() {
        use bollard::container::LogOutput;
        let m = |b: &'static [u8]| bytes::Bytes::from_static(b);
        let out = map_output(
            Ok(LogOutput::StdOut {
                message: m(b"\xff\x00a\r\n"),
            }),
            1,
        );
        assert_eq!(out, Some(Ok(Output::Stdout(b"\xff\x00a\r\n".to_vec()))));
        let err = map_output(Ok(LogOutput::StdErr { message: m(b"e") }), 1);
        assert_eq!(err, Some(Ok(Output::Stderr(b"e".to_vec()))));
        assert_eq!(
            map_output(Ok(LogOutput::StdIn { message: m(b"i") }), 1),
            None
        );
        let frame =
            m(b"\x03\x00\x00\x00\x00\x00\x00\x2eError grabbing logs: no such file or directory\n");
        match map_output(Ok(LogOutput::Console { message: frame }), 1) {
            Some(Err(EngineError::Stream(e))) => {
                assert!(
                    e.ends_with(": Error grabbing logs: no such file or directory"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            map_output(
                Ok(LogOutput::Console {
                    message: m(b"\x01\x00")
                }),
                1
            ),
            Some(Err(EngineError::Stream(_)))
        ));
    }

    #[test]
    fn statuses_become_variants() {
        let e = |s, m| from_bollard("op", 1, server(s, m));
        assert!(matches!(
            e(404, "No such image: busybox:latest"),
            EngineError::ImageNotFound(_)
        ));
        assert!(
            matches!(
                e(404, "No such container: berth-image-job-t1-0"),
                EngineError::NotFound(_)
            ),
            "a container whose name says image is still a container"
        );
        assert!(matches!(
            e(
                409,
                "Conflict. The container name \"/x\" is already in use by container \"abc\""
            ),
            EngineError::NameInUse(_)
        ));
        assert!(matches!(
            e(409, "removal of container x is already in progress"),
            EngineError::Conflict(_)
        ));
        assert!(e(503, "busy").is_transient());
        assert!(!e(400, "bad").is_transient());
        assert!(
            from_bollard("op", 7, bollard::errors::Error::RequestTimeoutError).is_engine_down()
        );
    }

    #[test]
    fn pull_failures_are_read_from_the_registrys_words() {
        let refused = |status, m: &str| EngineError::Refused {
            status,
            message: m.into(),
        };
        assert!(matches!(
            classify_pull(refused(
                500,
                "Head \"http://r/v2/a/manifests/1\": unauthorized: authentication required"
            )),
            EngineError::RegistryDenied(_)
        ));
        assert!(matches!(
            classify_pull(refused(
                404,
                "manifest for r/a:1 not found: manifest unknown"
            )),
            EngineError::ImageNotFound(_)
        ));
        assert!(matches!(
            classify_pull(EngineError::Stream("toomanyrequests: slow down".into())),
            EngineError::RegistryUnavailable(_)
        ));
        assert!(matches!(
            classify_pull(refused(
                500,
                "dial tcp 127.0.0.1:9: connect: connection refused"
            )),
            EngineError::RegistryUnavailable(_)
        ));
        assert_eq!(
            classify_pull(refused(400, "invalid reference format")),
            refused(400, "invalid reference format"),
            "what it cannot place stays as it was"
        );
        let away = EngineError::Unavailable(Cause::msg("client error (Connect)"));
        assert_eq!(
            classify_pull(away.clone()),
            away,
            "the engine's own absence stays"
        );
    }
}
