//! API errors: one variant per Batch error code the API answers with, each mapped once to
//! its HTTP status (spec §6), answered in Batch's error body shape. The message is what the
//! client reads: for berth's own failures, the whole chain of causes.

use crate::error_chain::chain;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    // 400
    #[error("{0}")]
    InvalidRequestBody(String),
    #[error("{0}")]
    InvalidPropertyValue(String),
    #[error("{0}")]
    MissingRequiredProperty(String),
    #[error("{0}")]
    InvalidQueryParameterValue(String),
    #[error("{0}")]
    InvalidHeaderValue(String),
    #[error("{0}")]
    MissingRequiredQueryParameter(String),
    // 401
    #[error("{0}")]
    AuthenticationFailed(String),
    // 403
    #[error("{0}")]
    AuthorizationFailure(String),
    // 404
    #[error("{0}")]
    JobNotFound(String),
    #[error("{0}")]
    TaskNotFound(String),
    #[error("{0}")]
    FileNotFound(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    JobScheduleNotFound(String),
    #[error("{0}")]
    PoolNotFound(String),
    #[error("{0}")]
    NodeNotFound(String),
    // 409
    #[error("{0}")]
    JobExists(String),
    #[error("{0}")]
    TaskExists(String),
    #[error("{0}")]
    TaskIdSameAsJobPreparationTask(String),
    #[error("{0}")]
    TaskIdSameAsJobReleaseTask(String),
    #[error("{0}")]
    JobNotActive(String),
    #[error("{0}")]
    JobDisabled(String),
    #[error("{0}")]
    JobCompleted(String),
    #[error("{0}")]
    JobBeingDeleted(String),
    #[error("{0}")]
    JobBeingTerminated(String),
    #[error("{0}")]
    JobPreparationTaskNotSpecified(String),
    #[error("{0}")]
    TaskCompleted(String),
    #[error("{0}")]
    TaskSucceeded(String),
    #[error("{0}")]
    TaskNotCompleted(String),
    #[error("{0}")]
    JobScheduleExists(String),
    #[error("{0}")]
    JobScheduleCompleted(String),
    #[error("{0}")]
    JobScheduleBeingTerminated(String),
    #[error("{0}")]
    JobScheduleBeingDeleted(String),
    #[error("{0}")]
    PoolExists(String),
    #[error("{0}")]
    PoolBeingDeleted(String),
    /// The pool still has jobs or nodes in a state that forbids the request.
    #[error("{0}")]
    PoolNotEmpty(String),
    /// The node that holds a task's files cannot answer now (unknown, gone, unreachable).
    #[error("{0}")]
    TaskFilesUnavailable(String),
    #[error("{0}")]
    NodeNotReady(String),
    /// Node protocol: the attempt is no longer the task's current one.
    #[error("{0}")]
    AttemptFenced(String),
    /// Node protocol: a newer enrolment owns this node id.
    #[error("{0}")]
    NodeSuperseded(String),
    // 405
    #[error("{0}")]
    UnsupportedHttpVerb(String),
    // 412
    #[error("{0}")]
    ConditionNotMet(String),
    // 413
    #[error("{0}")]
    RequestBodyTooLarge(String),
    // 415: Batch answers a wrong Content-Type with this code.
    #[error("{0}")]
    UnsupportedMediaType(String),
    // 500
    #[error("{0}")]
    InternalError(String),
    // 503: the service's database is away; the client retries.
    #[error("{0}")]
    ServerBusy(String),
}

impl ApiError {
    /// A failure of berth's own (the store, the disk): 500 `InternalError`, logged. The
    /// message is `e` and its causes ("state store: disk I/O error").
    pub fn internal(e: impl std::error::Error + 'static) -> Self {
        ApiError::InternalError(chain(&e))
    }

    /// Batch's error code.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidRequestBody(_) => "InvalidRequestBody",
            InvalidPropertyValue(_) => "InvalidPropertyValue",
            MissingRequiredProperty(_) => "MissingRequiredProperty",
            InvalidQueryParameterValue(_) => "InvalidQueryParameterValue",
            InvalidHeaderValue(_) | UnsupportedMediaType(_) => "InvalidHeaderValue",
            MissingRequiredQueryParameter(_) => "MissingRequiredQueryParameter",
            UnsupportedHttpVerb(_) => "UnsupportedHttpVerb",
            ConditionNotMet(_) => "ConditionNotMet",
            AuthenticationFailed(_) => "AuthenticationFailed",
            AuthorizationFailure(_) => "AuthorizationFailure",
            JobNotFound(_) => "JobNotFound",
            TaskNotFound(_) => "TaskNotFound",
            FileNotFound(_) => "FileNotFound",
            ResourceNotFound(_) => "ResourceNotFound",
            JobExists(_) => "JobExists",
            TaskExists(_) => "TaskExists",
            TaskIdSameAsJobPreparationTask(_) => "TaskIdSameAsJobPreparationTask",
            TaskIdSameAsJobReleaseTask(_) => "TaskIdSameAsJobReleaseTask",
            JobNotActive(_) => "JobNotActive",
            JobDisabled(_) => "JobDisabled",
            JobCompleted(_) => "JobCompleted",
            JobBeingDeleted(_) => "JobBeingDeleted",
            JobBeingTerminated(_) => "JobBeingTerminated",
            JobPreparationTaskNotSpecified(_) => "JobPreparationTaskNotSpecified",
            TaskCompleted(_) => "TaskCompleted",
            TaskSucceeded(_) => "TaskSucceeded",
            TaskNotCompleted(_) => "TaskNotCompleted",
            JobScheduleNotFound(_) => "JobScheduleNotFound",
            JobScheduleExists(_) => "JobScheduleExists",
            JobScheduleCompleted(_) => "JobScheduleCompleted",
            JobScheduleBeingTerminated(_) => "JobScheduleBeingTerminated",
            JobScheduleBeingDeleted(_) => "JobScheduleBeingDeleted",
            PoolNotFound(_) => "PoolNotFound",
            NodeNotFound(_) => "NodeNotFound",
            PoolExists(_) => "PoolExists",
            PoolBeingDeleted(_) => "PoolBeingDeleted",
            PoolNotEmpty(_) => "PoolNotEmpty",
            TaskFilesUnavailable(_) => "TaskFilesUnavailable",
            NodeNotReady(_) => "NodeNotReady",
            AttemptFenced(_) => berth_proto::node_protocol::FENCED,
            NodeSuperseded(_) => berth_proto::node_protocol::SUPERSEDED,
            RequestBodyTooLarge(_) => "RequestBodyTooLarge",
            InternalError(_) => "InternalError",
            ServerBusy(_) => "ServerBusy",
        }
    }

    /// The HTTP status Batch answers this code with.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidRequestBody(_)
            | InvalidPropertyValue(_)
            | MissingRequiredProperty(_)
            | InvalidQueryParameterValue(_)
            | MissingRequiredQueryParameter(_)
            | InvalidHeaderValue(_) => StatusCode::BAD_REQUEST,
            UnsupportedHttpVerb(_) => StatusCode::METHOD_NOT_ALLOWED,
            ConditionNotMet(_) => StatusCode::PRECONDITION_FAILED,
            AuthenticationFailed(_) => StatusCode::UNAUTHORIZED,
            AuthorizationFailure(_) => StatusCode::FORBIDDEN,
            JobNotFound(_)
            | TaskNotFound(_)
            | FileNotFound(_)
            | ResourceNotFound(_)
            | JobScheduleNotFound(_)
            | PoolNotFound(_)
            | NodeNotFound(_) => StatusCode::NOT_FOUND,
            JobExists(_)
            | TaskExists(_)
            | TaskIdSameAsJobPreparationTask(_)
            | TaskIdSameAsJobReleaseTask(_)
            | JobNotActive(_)
            | JobDisabled(_)
            | JobCompleted(_)
            | JobBeingDeleted(_)
            | JobBeingTerminated(_)
            | JobPreparationTaskNotSpecified(_)
            | TaskCompleted(_)
            | TaskSucceeded(_)
            | TaskNotCompleted(_)
            | JobScheduleExists(_)
            | JobScheduleCompleted(_)
            | JobScheduleBeingTerminated(_)
            | JobScheduleBeingDeleted(_)
            | PoolExists(_)
            | PoolBeingDeleted(_)
            | PoolNotEmpty(_)
            | TaskFilesUnavailable(_)
            | NodeNotReady(_)
            | AttemptFenced(_)
            | NodeSuperseded(_) => StatusCode::CONFLICT,
            RequestBodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InternalError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServerBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the client reads.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<crate::service::db::DbError> for ApiError {
    /// A database that is away is 503 `ServerBusy` (retry); anything else is berth's own
    /// failure, 500.
    fn from(e: crate::service::db::DbError) -> Self {
        if e.is_unavailable() {
            ApiError::ServerBusy(format!(
                "the service's database cannot be reached now; retry later ({})",
                chain(&e)
            ))
        } else {
            ApiError::internal(e)
        }
    }
}

/// `{ "code", "message": {"lang", "value"} }`, as Batch answers.
pub fn body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "odata.metadata": "berth/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": code,
        "message": {"lang": "en-US", "value": message},
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), message = %self, "API error");
        }
        (status, axum::Json(body(self.code(), &self.message()))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_batchs() {
        let cases = [
            (
                ApiError::InvalidRequestBody("m".into()),
                400,
                "InvalidRequestBody",
            ),
            (
                ApiError::UnsupportedMediaType("m".into()),
                415,
                "InvalidHeaderValue",
            ),
            (
                ApiError::AuthenticationFailed("m".into()),
                401,
                "AuthenticationFailed",
            ),
            (ApiError::TaskNotFound("m".into()), 404, "TaskNotFound"),
            (
                ApiError::JobBeingDeleted("m".into()),
                409,
                "JobBeingDeleted",
            ),
            (
                ApiError::JobScheduleNotFound("m".into()),
                404,
                "JobScheduleNotFound",
            ),
            (
                ApiError::JobScheduleBeingTerminated("m".into()),
                409,
                "JobScheduleBeingTerminated",
            ),
            (
                ApiError::MissingRequiredQueryParameter("m".into()),
                400,
                "MissingRequiredQueryParameter",
            ),
            (
                ApiError::UnsupportedHttpVerb("m".into()),
                405,
                "UnsupportedHttpVerb",
            ),
            (
                ApiError::ConditionNotMet("m".into()),
                412,
                "ConditionNotMet",
            ),
            (
                ApiError::RequestBodyTooLarge("m".into()),
                413,
                "RequestBodyTooLarge",
            ),
            (
                ApiError::internal(std::io::Error::other("disk")),
                500,
                "InternalError",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e:?}");
        }
    }
}
