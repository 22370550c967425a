//! Read paths: GET/HEAD answer 302 to a live replica (or 200 with a value stored in
//! the index, see [`inline`]); `?list` / `?unlinked` list keys.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use super::{ApiError, App};
use crate::index::{State, MAX_PAGE_KEYS, PAGE_BUDGET};
use crate::store::{Found, ListRange, Location, StoreError};

mod inline;
mod stream;

/// Request header of a GET naming volume servers (`host:port,…`) whose replica the
/// client read and found wrong (`hoard get` on an md5 mismatch): the 302 goes to
/// another replica while one is up, and the index reads those replicas itself in the
/// background, reporting and queueing for repair those it finds corrupt
/// ([`crate::store::Store::check_replicas`]).
pub const AVOID: &str = "hoard-avoid-volumes";

/// GET/HEAD of a key: 302 to a replica on a volume that is up (not one of those in
/// [`AVOID`] while another is up), or 200 with a value stored in the index
/// (`--inline-max`).
/// Linearizable in an index cluster (the store's read waits for this node's copy).
pub async fn redirect(
    app: &App,
    key: &[u8],
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let avoid: Vec<String> = req
        .headers()
        .get(AVOID)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let avoid: Vec<&str> = avoid.iter().map(String::as_str).collect();
    if !avoid.is_empty() {
        app.store.check_replicas(key, &avoid);
    }
    let at = match app.store.find_avoiding(key, &avoid).await? {
        Some(Found::At(at)) => at,
        Some(Found::Inline(record)) => {
            let head = req.method() == axum::http::Method::HEAD;
            return Ok(inline::respond(&record, req.headers(), head));
        }
        None => {
            return match &app.cfg.fallback {
                Some(fallback) => Ok(found(&format!("http://{fallback}{}", req.uri().path()))),
                None => Err(ApiError::NotFound),
            }
        }
    };
    let mut resp = found(&public_url(app, &at));
    let headers = resp.headers_mut();
    if let Some(md5) = at.record.md5_hex() {
        headers.insert("content-md5", header_value(&md5));
    }
    headers.insert("key-volumes", header_value(&at.record.volumes.join(",")));
    headers.insert(
        "key-balance",
        HeaderValue::from_static(if at.balanced {
            "balanced"
        } else {
            "unbalanced"
        }),
    );
    Ok(resp)
}

/// The URL a client is sent to: the volume's scheme, and a signed query when reads need
/// authentication (`--auth-mode all`).
pub(super) fn public_url(app: &App, at: &Location) -> String {
    let url = at.url.clone();
    let auth = &app.cfg.safety.auth;
    if !auth.signs_urls() {
        return url;
    }
    let path_at = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(url.len());
    let query = auth.signed_query(&url[path_at..], app.cfg.safety.signed_url_ttl);
    format!("{url}?{query}")
}

fn found(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, header_value(location));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

fn header_value(s: &str) -> HeaderValue {
    // Locations and volume names are ASCII by construction; fall back to empty.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The query of a listing: `list` or `unlinked` first, then `start`, `end`, `reverse`
/// and `limit`.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// `?unlinked` rather than `?list`.
    pub unlinked: bool,
    /// First key to consider (inclusive).
    pub start: Option<Vec<u8>>,
    /// Keys listed are below this one (exclusive).
    pub end: Option<Vec<u8>>,
    /// Highest key first; `next` is then the next page's `end`.
    pub reverse: bool,
    /// Page size, clamped to [`MAX_PAGE_KEYS`]; `None` (no `limit`, or `limit=0` as in
    /// minikeyvalue) = every key, streamed.
    pub limit: Option<usize>,
}

impl ListQuery {
    /// Parses a raw query string. The operation is the first parameter, as in
    /// minikeyvalue; values are form-decoded (`+` is a space). A `limit` must be a
    /// non-negative integer (else 400); any larger than [`MAX_PAGE_KEYS`], however
    /// large, is clamped to it. `reverse` takes no value, or `1`/`true`/`0`/`false`;
    /// unknown parameters are ignored, as minikeyvalue does.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut params = query.split('&').filter(|p| !p.is_empty()).map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let decode =
                |s: &str| -> Vec<u8> { percent_decode_str(&s.replace('+', " ")).collect() };
            (decode(name), decode(value))
        });
        let unlinked = match params.next() {
            Some((op, _)) if op == b"list" => false,
            Some((op, _)) if op == b"unlinked" => true,
            _ => {
                return Err(ApiError::BadRequest(
                    "unknown query: use ?list or ?unlinked".into(),
                ))
            }
        };
        let mut q = ListQuery {
            unlinked,
            ..ListQuery::default()
        };
        for (name, value) in params {
            match name.as_slice() {
                b"start" => q.start = Some(value),
                b"end" => q.end = Some(value),
                b"reverse" => {
                    q.reverse = match value.as_slice() {
                        b"" | b"1" | b"true" => true,
                        b"0" | b"false" => false,
                        _ => {
                            return Err(ApiError::BadRequest(
                                "reverse takes no value, or 1/true/0/false".into(),
                            ))
                        }
                    }
                }
                b"limit" => {
                    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                        return Err(ApiError::BadRequest(
                            "limit must be a non-negative integer".into(),
                        ));
                    }
                    // Digits only, so the only parse failure is overflow: clamp that too.
                    let n = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(usize::MAX);
                    // limit=0 means no limit, as in minikeyvalue.
                    q.limit = (n > 0).then_some(n.min(MAX_PAGE_KEYS));
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The JSON body of a listing, field order as minikeyvalue's.
#[derive(serde::Serialize)]
struct ListResponse {
    next: String,
    keys: Vec<String>,
}

/// `GET /prefix?list` and `?unlinked`: one bounded page when a `limit` is given, else
/// every matching key as a streamed body.
pub async fn list(app: &Arc<App>, prefix: Vec<u8>, query: &str) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query)?;
    let want = if q.unlinked {
        State::Unlinked
    } else {
        State::Live
    };
    let range = ListRange {
        prefix,
        start: q.start,
        end: q.end,
        reverse: q.reverse,
    };
    let Some(limit) = q.limit else {
        return stream::list_all(app, range, want).await;
    };
    let page = app.store.list(range, want, limit, PAGE_BUDGET).await?;
    let text = |k: Vec<u8>| String::from_utf8_lossy(&k).into_owned();
    let body = ListResponse {
        next: page.next.map(text).unwrap_or_default(),
        // The S3 API's own keys (multipart parts) are never shown.
        keys: page
            .keys
            .into_iter()
            .filter(|k| !crate::store::tenancy::is_internal(k))
            .map(text)
            .collect(),
    };
    Ok(axum::Json(body).into_response())
}

/// Why a listing could not go on, for a streamed body already under way.
fn aborted(e: StoreError) -> std::io::Error {
    tracing::warn!("listing aborted: {e}");
    std::io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries() {
        assert_eq!(ListQuery::parse("list").unwrap(), ListQuery::default());
        assert_eq!(
            ListQuery::parse("unlinked&start=/a%20b&limit=10").unwrap(),
            ListQuery {
                unlinked: true,
                start: Some(b"/a b".to_vec()),
                limit: Some(10),
                ..ListQuery::default()
            }
        );
        assert_eq!(ListQuery::parse("list&limit=0").unwrap().limit, None);
        // Any larger limit, even one past usize, is clamped to a page.
        for (limit, want) in [
            ("10000", MAX_PAGE_KEYS),
            ("10001", MAX_PAGE_KEYS),
            ("999999999999", MAX_PAGE_KEYS),
            ("99999999999999999999999999", MAX_PAGE_KEYS),
            ("9999", 9999),
            ("007", 7),
        ] {
            let q = ListQuery::parse(&format!("list&limit={limit}")).unwrap();
            assert_eq!(q.limit, Some(want), "{limit}");
        }
        assert_eq!(
            ListQuery::parse("list&start=/x+y")
                .unwrap()
                .start
                .as_deref(),
            Some(&b"/x y"[..])
        );
        let q = ListQuery::parse("list&start=/a&end=/b%2F&reverse&limit=5").unwrap();
        assert_eq!((q.end.as_deref(), q.reverse), (Some(&b"/b/"[..]), true));
        assert!(!ListQuery::parse("list&reverse=0").unwrap().reverse);
        assert!(ListQuery::parse("list&reverse=true").unwrap().reverse);
        for bad in [
            "",
            "list&reverse=yes",
            "limit=3&list",
            "foo",
            "list&limit=-1",
            "list&limit=x",
            "list&limit=",
            "list&limit=+5",
            "list&limit=5x",
            "list&limit=1e9",
        ] {
            assert!(ListQuery::parse(bad).is_err(), "{bad}");
        }
    }
}
