//! Write requests: PUT, DELETE, UNLINK, translated to the store core
//! ([`crate::store::Store::put`], where the write protocol and its crash-safety steps
//! are documented, `delete`, `unlink`).
//!
//! What is HTTP's alone stays here: `Content-Length`, the statuses, and draining a
//! refused upload's body so its client reads the status rather than a broken pipe.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, App};
use crate::store::PutError;

/// PUT /key: stream the body to every replica; 201 once all hold it.
pub async fn put(app: &Arc<App>, key: Vec<u8>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = body.into_data_stream();
    let len = match content_length(&parts.headers) {
        Ok(len) => len,
        Err(e) => {
            crate::http::drain_rejected(&parts.headers, body).await;
            return Err(e);
        }
    };
    match app.store.put(key, body, len).await {
        Ok(written) => {
            let mut resp = StatusCode::CREATED.into_response();
            resp.extensions_mut()
                .insert(crate::http::BytesReceived(written.size));
            Ok(resp)
        }
        Err(PutError { error, unread }) => {
            if let Some(body) = unread {
                crate::http::drain_rejected(&parts.headers, body).await;
            }
            Err(error.into())
        }
    }
}

/// DELETE /key: remove the value everywhere; 204, or 404 if absent.
pub async fn delete(app: &Arc<App>, key: Vec<u8>) -> Result<Response, ApiError> {
    app.store.delete(key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// UNLINK /key: virtual delete; 204, or 404 if absent or already unlinked.
pub async fn unlink(app: &App, key: Vec<u8>) -> Result<Response, ApiError> {
    app.store.unlink(key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::BadRequest("invalid Content-Length".into()))
        })
        .transpose()
}
