//! Engine failures, classified once by the implementation (`docker.rs` reads the Docker
//! engine's statuses and messages) so that callers decide on variants, never on text:
//! retry, blame the image, the registry, the settings, or the engine itself. What the
//! engine said (a status's message, a stream's error) is data and stays a `String`; what
//! went wrong on berth's side of the socket (I/O, the HTTP client) is kept as the source.

use crate::error_chain::{chain, Cause};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached (socket missing, connection refused or reset).
    #[error("the Docker engine is unavailable")]
    Unavailable(#[source] Cause),
    /// No answer within the deadline.
    #[error("the engine did not answer {op} within {secs} s")]
    Timeout { op: &'static str, secs: u64 },
    /// No such container.
    #[error("not found: {0}")]
    NotFound(String),
    /// The image is not on the node (create, inspect) or not in its registry (pull:
    /// unknown manifest, repository or tag).
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// No regular file at that path inside the container (after its links are followed).
    #[error("no such file: {0}")]
    NoSuchFile(String),
    /// The file inside the container is larger than the caller's limit.
    #[error("{path}: larger than {limit} bytes")]
    FileTooLarge { path: String, limit: u64 },
    /// Another container already holds the name asked for at create.
    #[error("name in use: {0}")]
    NameInUse(String),
    /// The request conflicts with the container's state (a removal in progress, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The registry refused the credentials (or their absence) for the image.
    #[error("the registry refused access: {0}")]
    RegistryDenied(String),
    /// The registry, or the way to it, failed in a way another try may mend: throttled,
    /// busy, 5xx, refused or reset connections, DNS or network timeouts.
    #[error("the registry is unavailable: {0}")]
    RegistryUnavailable(String),
    /// The engine answered with an error status not classified above.
    #[error("the engine refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// A pull showed no progress within one of its limits.
    #[error("the pull showed no progress within its {limit} limit ({secs} s)")]
    PullStalled { limit: &'static str, secs: f64 },
    /// An error reported inside a stream (attach, logs) not classified above.
    #[error("{0}")]
    Stream(String),
    /// A failure of the client not classified above.
    #[error(transparent)]
    Other(Cause),
}

impl EngineError {
    /// Worth another try: the engine or the registry was busy, slow or briefly away.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Unavailable(_)
            | EngineError::Timeout { .. }
            | EngineError::PullStalled { .. }
            | EngineError::RegistryUnavailable(_) => true,
            EngineError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The engine itself is away or too slow: not the task's, image's or registry's fault.
    pub fn is_engine_down(&self) -> bool {
        matches!(
            self,
            EngineError::Unavailable(_) | EngineError::Timeout { .. }
        )
    }

    /// The engine's own words, for failure details; berth's words and their causes for
    /// the rest.
    pub fn message(&self) -> String {
        match self {
            EngineError::Refused { message, .. }
            | EngineError::ImageNotFound(message)
            | EngineError::RegistryDenied(message)
            | EngineError::RegistryUnavailable(message) => message.clone(),
            other => chain(other),
        }
    }
}
