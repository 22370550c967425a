//! GET/HEAD of a value stored in the index (`--inline-max`): 200 with the bytes, or 206
//! with one range of them (`Range: bytes=…`; several ranges get the whole value, as
//! RFC 9110 allows, and an unsatisfiable one 416 with `Content-Range: bytes */size`).
//!
//! Headers are those of the redirect path where they apply — `Content-Md5` — and those
//! a volume sends with a file: `Content-Type`, `Accept-Ranges`, `Content-Length`,
//! `Last-Modified` (the record's commit time), and `ETag` (the md5, when known).

use std::ops::RangeInclusive;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::header_value;
use crate::index::Record;

/// The answer to a GET (or HEAD, `head`) of `record`, which holds its value.
pub(super) fn respond(record: &Record, headers: &HeaderMap, head: bool) -> Response {
    let value = record.inline.as_deref().unwrap_or_default();
    let size = value.len() as u64;
    let range = match requested(headers, size) {
        Ok(range) => range,
        Err(()) => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return resp;
        }
    };
    let (status, bytes) = match &range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            value
                .get(*r.start() as usize..=*r.end() as usize)
                .unwrap_or_default(),
        ),
        None => (StatusCode::OK, value),
    };
    let len = bytes.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes.to_vec())
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    if let Some(r) = &range {
        let content_range = format!("bytes {}-{}/{size}", r.start(), r.end());
        h.insert(header::CONTENT_RANGE, header_value(&content_range));
    }
    if let Some(md5) = record.md5_hex() {
        h.insert(header::ETAG, header_value(&format!("\"{md5}\"")));
        h.insert("content-md5", header_value(&md5));
    }
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.changed_ms);
    h.insert(
        header::LAST_MODIFIED,
        header_value(&httpdate::fmt_http_date(modified)),
    );
    resp
}

/// The single range asked for (`None`: the whole value); `Err` when unsatisfiable.
fn requested(headers: &HeaderMap, size: u64) -> Result<Option<RangeInclusive<u64>>, ()> {
    let Some(raw) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let raw = raw.to_str().map_err(|_| ())?;
    let ranges = http_range_header::parse_range_header(raw)
        .and_then(|r| r.validate(size))
        .map_err(|_| ())?;
    match ranges.as_slice() {
        [one] => Ok(Some(one.clone())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Result<Option<RangeInclusive<u64>>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, value.parse().unwrap());
        requested(&h, size)
    }

    #[test]
    fn ranges() {
        assert_eq!(requested(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(range("bytes=2-4", 10), Ok(Some(2..=4)));
        assert_eq!(range("bytes=7-", 10), Ok(Some(7..=9)));
        assert_eq!(range("bytes=-3", 10), Ok(Some(7..=9)));
        assert_eq!(range("bytes=5-100", 10), Ok(Some(5..=9)));
        assert_eq!(range("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(range("bytes=10-", 10), Err(()));
        assert_eq!(range("bytes=4-2", 10), Err(()));
        assert_eq!(range("items=0-1", 10), Err(()));
    }
}
