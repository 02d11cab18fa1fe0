//! Engine failures, classified so callers can decide: retry, report, or give up.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached (socket missing, connection refused or reset).
    #[error("the Docker engine is unavailable: {0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The engine answered with an error status.
    #[error("the engine refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// No answer within the deadline.
    #[error("the engine did not answer {op} within {secs} s")]
    Timeout { op: &'static str, secs: u64 },
    /// A pull showed no progress within one of its limits.
    #[error("the pull showed no progress within its {limit} limit ({secs} s)")]
    PullStalled { limit: &'static str, secs: f64 },
    /// An error reported inside a stream (pull progress, attach).
    #[error("{0}")]
    Stream(String),
    #[error("{0}")]
    Other(String),
}

impl EngineError {
    /// Worth another try: the engine was busy, slow or briefly away.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Unavailable(_)
            | EngineError::Timeout { .. }
            | EngineError::PullStalled { .. } => true,
            EngineError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The engine's own words, for failure details.
    pub fn message(&self) -> String {
        match self {
            EngineError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn from_bollard(
        op: &'static str,
        timeout_secs: u64,
        e: bollard::errors::Error,
    ) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code: 404,
                message,
            } => EngineError::NotFound(message),
            B::DockerResponseServerError {
                status_code: 409,
                message,
            } => EngineError::Conflict(message),
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
            B::IOError { err } => EngineError::Unavailable(err.to_string()),
            B::HyperResponseError { err } => EngineError::Unavailable(err.to_string()),
            other => {
                let s = other.to_string();
                // hyper's "client error (Connect)" as much as "connection refused".
                let l = s.to_ascii_lowercase();
                if l.contains("connect") || l.contains("no such file") {
                    EngineError::Unavailable(s)
                } else {
                    EngineError::Other(s)
                }
            }
        }
    }
}
