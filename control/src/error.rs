//! The one error type of the configuration center, with a stable code and an HTTP status.

use serde::{Deserialize, Serialize};

/// What went wrong, as a stable machine-readable code; each maps to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A malformed request (bad name, missing field, bad parameter).
    BadRequest,
    /// A document that does not parse in its declared format.
    InvalidDocument,
    /// A value that violates the key's JSON Schema.
    SchemaViolation,
    /// A document format this build cannot validate.
    UnsupportedFormat,
    /// No or an unknown API token.
    Unauthorized,
    /// The caller lacks the permission for this action.
    Forbidden,
    /// The namespace needs review: the publisher must differ from the editors.
    ReviewRequired,
    /// The application, environment, cluster, namespace, key or release does not exist.
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// Optimistic versioning: the object changed since the caller read it.
    VersionConflict,
    /// Another control node changed the shared store first; nothing was applied (retry).
    Stale,
    /// The request body is larger than the service accepts.
    PayloadTooLarge,
    /// The route exists but not with this HTTP method.
    MethodNotAllowed,
    /// The store failed or did not answer in time; nothing was applied.
    StoreUnavailable,
    /// A bug or an unexpected condition.
    Internal,
    /// A service the control service called for the caller (a proxy's admin port) failed or did not answer.
    BadGateway,
    /// This control node is shutting down: nothing was applied; send the request to another node.
    Draining,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidDocument
            | ErrorCode::SchemaViolation
            | ErrorCode::UnsupportedFormat => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::ReviewRequired => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::AlreadyExists | ErrorCode::VersionConflict | ErrorCode::Stale => 409,
            ErrorCode::StoreUnavailable | ErrorCode::Draining => 503,
            ErrorCode::Internal => 500,
            ErrorCode::BadGateway => 502,
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::StoreUnavailable | ErrorCode::VersionConflict | ErrorCode::Draining
        )
    }
}

/// An error of the configuration center: a code, a message and, where it applies, the offending field.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{code:?}: {message}{}", field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
pub struct ControlError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable message.
    pub message: String,
    /// The field (request field or path inside a document) the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ControlError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ControlError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The same error, about `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A `bad_request` about a field.
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        ControlError::new(ErrorCode::BadRequest, message).with_field(field)
    }

    /// A `not_found` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        ControlError::new(ErrorCode::NotFound, message)
    }

    /// A `forbidden` error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ControlError::new(ErrorCode::Forbidden, message)
    }

    /// The JSON body sent to HTTP clients: `{"error": {"code", "message", "field"}}`.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }
}

/// The result type of this crate.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;
