//! GET and HEAD: files (with Range, conditional requests, Last-Modified and ETag, all by
//! tower-http's `ServeFile`), directory listings, and nginx's redirect of a directory
//! named without its trailing slash.
//!
//! A plain GET or HEAD (no Range, no condition) of a small file is answered without
//! `ServeFile`, on the request's task: one `openat2` (which also checks the path, see
//! [`super::beneath`]), one `fstat`, one `read` — page-cache work, as nginx does it —
//! instead of four trips to the blocking pool. Its headers are the ones `ServeFile`
//! sends (Content-Type, Accept-Ranges, Last-Modified, ETag, Content-Length).

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

/// Largest file answered by [`small_file`].
const SMALL_FILE: u64 = 64 << 10;

/// Answers a GET or HEAD of `path`.
pub async fn get(root: &Root, path: &VolumePath, req: Request) -> Result<Response, VolumeError> {
    if path.names_dir() {
        if let Some(res) = listing::list_small(root, path)? {
            return Ok(res);
        }
    } else if let Some(res) = small_file(root, path, &req)? {
        return Ok(res);
    }
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

/// The fast path: a plain GET/HEAD of a regular file of at most [`SMALL_FILE`] bytes
/// whose name has no extension (so its type is `application/octet-stream`, as
/// `ServeFile` would guess), reached without symlinks. `None`: take the general path.
fn small_file(
    root: &Root,
    path: &VolumePath,
    req: &Request,
) -> Result<Option<Response>, VolumeError> {
    use std::io::Read as _;
    const CONDITIONS: [header::HeaderName; 6] = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ];
    let headers = req.headers();
    if path.names_dir() || CONDITIONS.iter().any(|h| headers.contains_key(h)) {
        return Ok(None);
    }
    match path.split_last() {
        Some((_, name)) if !name.contains('.') => {}
        _ => return Ok(None),
    }
    let Some(mut file) = root.open_plain(path)? else {
        return Ok(None);
    };
    let io = |e| VolumeError::io("reading a small file", e);
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() || meta.len() > SMALL_FILE {
        return Ok(None);
    }
    let modified = meta.modified().ok();
    let mut res = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(m) = modified {
        res = res.header(header::LAST_MODIFIED, httpdate::fmt_http_date(m));
    }
    if let Some(d) = modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()) {
        let etag = format!(
            "\"{:x}.{:08x}-{:x}\"",
            d.as_secs(),
            d.subsec_nanos(),
            meta.len()
        );
        res = res.header(header::ETAG, etag);
    }
    let body = if req.method() == axum::http::Method::HEAD {
        res = res.header(header::CONTENT_LENGTH, meta.len());
        Body::empty()
    } else {
        // One read for the whole file (read_to_end would add one to see the end).
        let mut data = vec![0; meta.len() as usize];
        let mut filled = 0;
        while filled < data.len() {
            match file.read(&mut data[filled..]).map_err(io)? {
                0 => break,
                n => filled += n,
            }
        }
        data.truncate(filled);
        res = res.header(header::CONTENT_LENGTH, data.len());
        Body::from(data)
    };
    res.body(body)
        .map(Some)
        .map_err(|e| VolumeError::io("building a response", std::io::Error::other(e)))
}
