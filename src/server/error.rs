//! The index server's error type and its mapping to HTTP statuses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::index::IndexError;
use crate::key::KeyError;
use crate::ops::OpsError;
use crate::replica::{DeleteError, FanoutError};

/// Everything a request can fail with. Each variant maps to one status; the message is
/// the response body (plain text) so clients see why.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path is not an acceptable key.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// Malformed request (bad query, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// No such (visible) key.
    #[error("not found")]
    NotFound,
    /// PUT of a key that exists; DELETE of a protected key.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Another write of the same key is in flight.
    #[error("another write of this key is in progress")]
    Conflict,
    /// PUT without a body.
    #[error("a PUT needs a non-empty body")]
    LengthRequired,
    /// Unsupported method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The index store failed.
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// Writing replicas failed because of the client (disconnect, short body).
    #[error("{0}")]
    ClientBody(FanoutError),
    /// Writing or deleting on a volume failed.
    #[error("{0}")]
    Volume(String),
    /// No replica volume of the key is reachable, or a target volume is down.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Key(KeyError::TooLong) => StatusCode::URI_TOO_LONG,
            ApiError::Key(_) | ApiError::BadRequest(_) | ApiError::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict => StatusCode::CONFLICT,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Index(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Volume(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<FanoutError> for ApiError {
    fn from(e: FanoutError) -> Self {
        match e {
            FanoutError::Client(_) | FanoutError::Length { .. } => ApiError::ClientBody(e),
            FanoutError::Replica(_) | FanoutError::Stalled { .. } => {
                ApiError::Volume(e.to_string())
            }
            FanoutError::Down { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Index(e) => ApiError::Index(e),
            OpsError::Delete(DeleteError::Down { .. }) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Volume(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("{status}: {self}");
        }
        // minikeyvalue answers 404 with an empty body; keep that exactly.
        let body = if status == StatusCode::NOT_FOUND {
            String::new()
        } else {
            format!("{self}\n")
        };
        let mut resp = (status, body).into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(
                header::ALLOW,
                header::HeaderValue::from_static("GET, HEAD, PUT, DELETE, UNLINK"),
            );
        }
        resp
    }
}
