//! The volume server's one error type and the HTTP status each case answers.

use std::io;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::path::PathError;

/// Why the volume server failed a request (each variant is one status; the client
/// side of a volume request is `crate::replica::VolumeError`).
#[derive(Debug, thiserror::Error)]
pub enum VolumeServerError {
    /// The request path was refused (400).
    #[error("bad path: {0}")]
    BadPath(#[from] PathError),
    /// Nothing at that path (404).
    #[error("not found")]
    NotFound,
    /// The path leads outside the root through a symlink, or access was denied (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request conflicts with what is on disk (409): e.g. a parent is a file, or the
    /// target is a directory.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// A method other than GET, HEAD, PUT, DELETE (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request body broke off (client gone, shorter than its Content-Length) (400).
    #[error("request body: {0}")]
    Body(#[source] axum::Error),
    /// The file's bytes differ from the checksum stored with it (500).
    #[error("{0}: the file's bytes differ from its stored checksum")]
    Corrupt(String),
    /// A file system operation failed (500; 507 when the disk is full).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

impl VolumeServerError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The status this error answers.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadPath(_) | Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            Self::Io { .. } | Self::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for VolumeServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Server errors name files on disk: log them, tell the client only the status.
        let message = if status.is_server_error() {
            tracing::error!("volume: {self}");
            status
                .canonical_reason()
                .unwrap_or("server error")
                .to_owned()
        } else {
            self.to_string()
        };
        let mut res = (status, format!("{message}\n")).into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            res.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, PUT, DELETE"),
            );
        }
        res
    }
}

/// Runs blocking file system work on the blocking pool.
pub async fn blocking<T, F>(work: F) -> Result<T, VolumeServerError>
where
    F: FnOnce() -> Result<T, VolumeServerError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| VolumeServerError::io("blocking file system task", io::Error::other(e)))?
}
