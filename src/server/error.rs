//! The HTTP layer's error type and its mapping to statuses: errors of the store core
//! ([`StoreError`]) and the few that only HTTP has (an unparsable path or query, an
//! unknown method, a too large request).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::index::IndexError;
use crate::key::KeyError;
use crate::store::StoreError;

/// Everything a request can fail with. Each variant maps to one status; the message is
/// the response body (plain text) so clients see why.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path is not an acceptable key.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// Malformed request (bad query, bad header, bad body).
    #[error("{0}")]
    BadRequest(String),
    /// No such (visible) key or endpoint.
    #[error("not found")]
    NotFound,
    /// Another operation on the same key is in flight.
    #[error("another write of this key is in progress")]
    Conflict,
    /// Unsupported method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request body (or the work it asks for) is over a limit.
    #[error("{0}")]
    TooLarge(String),
    /// The store core refused or failed the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        ApiError::Store(StoreError::Index(e))
    }
}

/// The HTTP status of a store error — what every front-end over HTTP answers for it.
pub fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Key(KeyError::TooLong) => StatusCode::URI_TOO_LONG,
        StoreError::Key(_) | StoreError::Invalid(_) | StoreError::ClientBody(_) => {
            StatusCode::BAD_REQUEST
        }
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::Exists
        | StoreError::Protected
        | StoreError::Forbidden(_)
        | StoreError::QuotaExceeded(_) => StatusCode::FORBIDDEN,
        StoreError::Conflict | StoreError::Superseded => StatusCode::CONFLICT,
        StoreError::Empty => StatusCode::LENGTH_REQUIRED,
        // No leader, or a leader without its quorum: another member (or a
        // moment later) can serve; the message says whether it was applied.
        StoreError::Index(IndexError::Replication(_)) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Index(_) => StatusCode::INTERNAL_SERVER_ERROR,
        StoreError::Volume(_) => StatusCode::BAD_GATEWAY,
        StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Key(KeyError::TooLong) => StatusCode::URI_TOO_LONG,
            ApiError::Key(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Store(e) => store_status(e),
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
