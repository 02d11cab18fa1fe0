//! THE seam to the container engine: the [`Engine`] trait says, in berth's words, what
//! berth asks of an engine. [`Docker`] (`docker.rs`) is the real one and the only code that
//! holds a bollard client or reads an engine's error text; [`Fake`] (`fake.rs`) serves the
//! unit tests of the logic above it and node simulations.
//!
//! The Engine API's models (`bollard::models`) still shape the create body, which the pure
//! create stage builds; nothing else of bollard leaves this module.

mod archive;
mod docker;
mod error;
pub mod fake;

#[cfg(test)]
pub(crate) use docker::classify_pull;
pub use docker::{resolve_host, socket_path, Docker, DEFAULT_CALL_TIMEOUT};
pub use error::EngineError;
pub use fake::Fake;

use bollard::models::ContainerCreateBody;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A chunk of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// A container's output, chunk by chunk, as the engine sends it.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, EngineError>> + Send>>;

/// What `inspect` tells berth about a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerState {
    pub id: String,
    /// Docker's status words: `created`, `running`, `exited`, `dead`, ...
    pub status: Option<String>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub pid: Option<i64>,
    /// When the container's process started (none if it never did).
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One container of a label listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    /// Docker's status word (`created`, `running`, `exited`, ...).
    pub state: Option<String>,
    pub labels: HashMap<String, String>,
}

impl ContainerSummary {
    /// The value of label `key`, empty when it has none.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
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

/// Limits of one pull attempt (the total limit is the caller's). A pull that shows no
/// progress event at all within `first_progress`, or none for `inactivity` once started,
/// is abandoned; the engine cancels its pull when berth hangs up.
#[derive(Debug, Clone, Copy)]
pub struct PullLimits {
    pub first_progress: Duration,
    pub inactivity: Duration,
}

/// The engine every part of berth shares.
pub type SharedEngine = Arc<dyn Engine>;

/// What berth asks of a container engine (the Docker Engine API's verbs, in berth's
/// vocabulary). Every call has its own deadline inside the implementation; streams
/// (output, wait, pull) last as long as the work.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Where the engine is reached, for messages.
    fn host(&self) -> &str;

    /// Agrees on the API version with the engine (an older engine lowers it).
    fn negotiate(&self) -> BoxFuture<'_, Result<(), EngineError>>;

    /// Whether the engine's listener takes a new connection: a stopping engine closes it
    /// before it stops its containers, so this sees the moment it goes away.
    fn listening(&self) -> BoxFuture<'_, bool>;

    /// Whether the engine answers within a few seconds: the health probe.
    fn probe(&self) -> BoxFuture<'_, Result<(), EngineError>>;

    /// The names of the engine's runtimes (`runc`, `nvidia`, ...).
    fn runtimes(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>>;

    /// The image's `Env` (`K=V` entries); empty when the image sets none.
    fn image_env<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Vec<String>, EngineError>>;

    /// Whether the image is present locally.
    fn image_present<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, EngineError>>;

    /// Pulls `repository:tag_or_digest` within `limits`, calling `progress` per event.
    fn pull<'a>(
        &'a self,
        repository: &'a str,
        tag_or_digest: &'a str,
        platform: Option<&'a str>,
        creds: Option<&'a Credentials>,
        limits: PullLimits,
        progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Asks the registry, through the engine, whether `image` can be pulled with `creds`
    /// (the manifest is resolved; nothing is downloaded). Returns the manifest digest.
    fn registry_check<'a>(
        &'a self,
        image: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<String, EngineError>>;

    /// Creates a container with a fixed name and returns its id. Transient failures are
    /// retried; a leftover container holding the name is removed first (it can only be
    /// berth's: the name carries the node id and attempt). The name may also be held by a
    /// create still under way, sent by an agent process that died (the engine reserves the
    /// name before the container can be found or removed): that one is waited for, up to a
    /// minute, and then removed.
    fn create<'a>(
        &'a self,
        name: &'a str,
        body: ContainerCreateBody,
        platform: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, EngineError>>;

    /// The chosen streams (`[stdout, stderr]`, at least one) of the container's output from
    /// its first byte, read from the engine's log store, following until the container
    /// stops when `follow`.
    fn logs_of(&self, id: &str, follow: bool, which: [bool; 2]) -> OutputStream;

    /// Both output streams; see [`Engine::logs_of`].
    fn logs(&self, id: &str, follow: bool) -> OutputStream {
        self.logs_of(id, follow, [true, true])
    }

    /// Attaches to stdout/stderr (call before `start`).
    fn attach<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<OutputStream, EngineError>>;

    /// Resolves with the exit code once the container is not running (at once for one
    /// that already exited). Owns what it needs, so it can be spawned.
    fn wait(&self, id: &str) -> BoxFuture<'static, Result<i64, EngineError>>;

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerState, EngineError>>;

    /// Sends SIGTERM (or the container's stop signal), then SIGKILL after `grace`.
    /// Already stopped is success.
    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), EngineError>>;

    fn kill<'a>(&'a self, id: &'a str, signal: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Removes a container (forced, with its anonymous volumes). Gone already is success.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Containers (running or not) carrying every `key=value` label given.
    fn list_labelled<'a>(
        &'a self,
        labels: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>>;

    /// The bytes of the file at `path` (absolute) inside container `id`, created or
    /// running, as the engine's archive endpoint gives it; symbolic links are followed
    /// inside the container. Errors: [`EngineError::NoSuchFile`] when no regular file is
    /// there, [`EngineError::FileTooLarge`] past `limit` bytes, `NotFound` for the
    /// container.
    fn read_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, EngineError>>;
}
