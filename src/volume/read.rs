//! GET and HEAD: files (with Range, conditional requests, Last-Modified and ETag, all by
//! tower-http's `ServeFile`), directory listings, and nginx's redirect of a directory
//! named without its trailing slash.
//!
//! A plain GET or HEAD (no Range, no condition) of a small file is answered without
//! `ServeFile`, on the request's task: one `openat2` (which also checks the path, see
//! [`super::beneath`]), one `fstat`, one `read` — page-cache work, as nginx does it —
//! instead of four trips to the blocking pool. Its headers are the ones `ServeFile`
//! sends (Content-Type, Accept-Ranges, Last-Modified, ETag, Content-Length); a larger
//! file is streamed from the same descriptor.
//!
//! A whole-file GET of a file with a stored checksum is checked against it
//! ([`super::checksum`]): a small file before the answer (500 on a mismatch), a larger
//! one while it streams (the body is cut short on a mismatch). Range requests are not
//! checked; nor are reads sending [`super::checksum::UNVERIFIED`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::checksum;
use super::error::{blocking, VolumeServerError};
use super::listing;
use super::path::VolumePath;
use super::root::Root;

/// Read size of file bodies; 1 MiB nearly matches nginx's sendfile.
const READ_CHUNK: usize = 1 << 20;

/// Largest file answered by [`small_file`].
const SMALL_FILE: u64 = 64 << 10;

/// Answers a GET or HEAD of `path`.
pub async fn get(
    root: &Root,
    path: &VolumePath,
    req: Request,
) -> Result<Response, VolumeServerError> {
    let headers = req.headers();
    // Only a whole-file GET can be checked against the whole file's checksum.
    let check = req.method() == axum::http::Method::GET
        && !headers.contains_key(header::RANGE)
        && headers
            .get(checksum::UNVERIFIED)
            .is_none_or(|v| v.as_bytes() != b"1");
    if path.names_dir() {
        if let Some(res) = listing::list_small(root, path)? {
            return Ok(res);
        }
    } else if let Some(res) = plain_file(root, path, &req, check)? {
        return Ok(res);
    }
    let target = {
        let (root, path) = (root.clone(), path.clone());
        blocking(move || root.existing(&path)).await?
    };
    let meta = tokio::fs::metadata(&target)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VolumeServerError::NotFound,
            _ => VolumeServerError::io(format!("inspecting {}", target.display()), e),
        })?;

    if meta.is_dir() {
        return if path.names_dir() {
            listing::list(root.path().to_path_buf(), target).await
        } else {
            Ok(redirect_to_dir(&req))
        };
    }
    if path.names_dir() || !meta.is_file() {
        return Err(VolumeServerError::NotFound);
    }
    // Read by path here, by the file `ServeFile` opens: a file replaced in between (a
    // repair's copy renamed over it) may be checked against the other's checksum and
    // cut short — a failed read, never a wrong one. hoard's own reads never get here
    // (its file names have no extension and it sends no conditions: `plain_file`).
    let want = match check {
        true => checksum::of_path(&target),
        false => None,
    };
    let serve = ServeFile::new(&target)
        .with_buf_chunk_size(READ_CHUNK)
        // A multi-range request gets the whole file (200), which RFC 9110 allows.
        .ignore_multi_range_requests(true);
    let res = match serve.oneshot(req).await {
        Ok(res) => res.map(Body::new),
        Err(never) => match never {},
    };
    match want {
        Some(want) if res.status() == StatusCode::OK => {
            let what = path.relative().display().to_string();
            Ok(res.map(|body| checked(body.into_data_stream(), want, what)))
        }
        _ => Ok(res),
    }
}

/// `data` (the whole file `what`), checked against its stored md5 `want`.
fn checked<S, E>(data: S, want: [u8; 16], what: String) -> Body
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let report = {
        let what = what.clone();
        Box::new(move |got| checksum::report_corrupt(&what, &want, &got))
    };
    Body::from_stream(super::verified::Verified::new(data, want, what, report))
}

/// A file's bytes from `file`, [`READ_CHUNK`] at a time.
fn file_stream(
    file: std::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::from_std(file);
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK);
        let n = file.read_buf(&mut buf).await?;
        Ok((n > 0).then(|| (buf.freeze(), file)))
    })
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

/// The fast path: a plain GET/HEAD of a regular file whose name has no extension (so
/// its type is `application/octet-stream`, as `ServeFile` would guess), reached
/// without symlinks. A file of at most [`SMALL_FILE`] bytes is read at once (and, with
/// `check`, checked against its stored checksum before the answer); a larger one is
/// streamed from the same descriptor (checked as it streams). `None`: take the general
/// path.
fn plain_file(
    root: &Root,
    path: &VolumePath,
    req: &Request,
    check: bool,
) -> Result<Option<Response>, VolumeServerError> {
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
    let io = |e| VolumeServerError::io("reading a small file", e);
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
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
    let want = match check {
        true => checksum::of_file(&file),
        false => None,
    };
    let body = if req.method() == axum::http::Method::HEAD {
        res = res.header(header::CONTENT_LENGTH, meta.len());
        Body::empty()
    } else if meta.len() > SMALL_FILE {
        res = res.header(header::CONTENT_LENGTH, meta.len());
        let data = Box::pin(file_stream(file));
        match want {
            Some(want) => checked(data, want, path.relative().display().to_string()),
            None => Body::from_stream(data),
        }
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
        if let Some(want) = want {
            let got = checksum::md5_of(&data);
            if got != want {
                let what = path.relative().display().to_string();
                checksum::report_corrupt(&what, &want, &got);
                return Err(VolumeServerError::Corrupt(what));
            }
        }
        res = res.header(header::CONTENT_LENGTH, data.len());
        Body::from(data)
    };
    res.body(body)
        .map(Some)
        .map_err(|e| VolumeServerError::io("building a response", std::io::Error::other(e)))
}
