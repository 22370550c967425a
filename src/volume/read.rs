//! GET and HEAD: files (with Range, conditional requests, Last-Modified and ETag, all by
//! tower-http's `ServeFile`), directory listings, and nginx's redirect of a directory
//! named without its trailing slash.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::error::{blocking, VolumeError};
use super::listing;
use super::path::VolumePath;
use super::root::Root;

/// Read size of file bodies; 1 MiB nearly matches nginx's sendfile.
const READ_CHUNK: usize = 1 << 20;

/// Answers a GET or HEAD of `path`.
pub async fn get(root: &Root, path: &VolumePath, req: Request) -> Result<Response, VolumeError> {
    let target = {
        let (root, path) = (root.clone(), path.clone());
        blocking(move || root.existing(&path)).await?
    };
    let meta = tokio::fs::metadata(&target)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VolumeError::NotFound,
            _ => VolumeError::io(format!("inspecting {}", target.display()), e),
        })?;

    if meta.is_dir() {
        return if path.names_dir() {
            listing::list(root.path().to_path_buf(), target).await
        } else {
            Ok(redirect_to_dir(&req))
        };
    }
    if path.names_dir() || !meta.is_file() {
        return Err(VolumeError::NotFound);
    }
    let serve = ServeFile::new(&target)
        .with_buf_chunk_size(READ_CHUNK)
        // A multi-range request gets the whole file (200), which RFC 9110 allows.
        .ignore_multi_range_requests(true);
    match serve.oneshot(req).await {
        Ok(res) => Ok(res.map(Body::new)),
        Err(never) => match never {},
    }
}

/// 301 to the same path with a `/` appended (query kept), as nginx does.
fn redirect_to_dir(req: &Request) -> Response {
    let uri = req.uri();
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
    )
        .into_response()
}
