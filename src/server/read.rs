//! Read paths: GET/HEAD answer 302 to a live replica; `?list` / `?unlinked` list keys.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use super::{ApiError, App};
use crate::index::{Record, State};
use crate::placement::server_of;
use crate::replica::VolumeClient;

/// Most keys one `?list` without `limit` may return (beyond: 413).
pub const MAX_LIST: usize = 1_000_000;

/// GET/HEAD of a key: 302 to a replica on a volume that is up.
pub fn redirect(app: &App, key: &[u8], raw_path: &str) -> Result<Response, ApiError> {
    let record = app.index.get(key)?.filter(|r| r.state == State::Live);
    let Some(record) = record else {
        return match &app.cfg.fallback {
            Some(fallback) => Ok(found(&format!("http://{fallback}{raw_path}"))),
            None => Err(ApiError::NotFound),
        };
    };
    let location = pick_replica(app, &record).ok_or_else(|| {
        ApiError::Unavailable(format!(
            "no replica volume of this key is up ({})",
            record.volumes.join(",")
        ))
    })?;
    let mut resp = found(&public_url(app, location, key));
    let headers = resp.headers_mut();
    if let Some(md5) = record.md5_hex() {
        headers.insert("content-md5", header_value(&md5));
    }
    headers.insert("key-volumes", header_value(&record.volumes.join(",")));
    let balanced = app.placement.current().locate(key) == record.volumes;
    headers.insert(
        "key-balance",
        HeaderValue::from_static(if balanced { "balanced" } else { "unbalanced" }),
    );
    Ok(resp)
}

/// The URL a client is sent to: the volume's scheme, and a signed query when reads need
/// authentication (`--auth-mode all`).
fn public_url(app: &App, location: &str, key: &[u8]) -> String {
    let url = app.client.scheme_url(&VolumeClient::url(location, key));
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

/// A random replica that holds the value (not missing after a degraded write) and whose
/// volume server is up, spreading reads over the copies.
fn pick_replica<'a>(app: &App, record: &'a Record) -> Option<&'a str> {
    let up: Vec<&str> = record
        .holders()
        .filter(|v| app.health.is_up(server_of(v)))
        .collect();
    (!up.is_empty()).then(|| up[fastrand::usize(..up.len())])
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

/// The query of a listing: `list` or `unlinked` first, then `start` and `limit`.
#[derive(Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// `?unlinked` rather than `?list`.
    pub unlinked: bool,
    /// First key to consider (inclusive).
    pub start: Option<Vec<u8>>,
    /// Page size; `None` = everything (up to [`MAX_LIST`]).
    pub limit: Option<usize>,
}

impl ListQuery {
    /// Parses a raw query string. The operation is the first parameter, as in
    /// minikeyvalue; values are form-decoded (`+` is a space).
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
            start: None,
            limit: None,
        };
        for (name, value) in params {
            match name.as_slice() {
                b"start" => q.start = Some(value),
                b"limit" => {
                    let n: usize = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| {
                            ApiError::BadRequest("limit must be a non-negative integer".into())
                        })?;
                    // limit=0 means no limit, as in minikeyvalue.
                    q.limit = (n > 0).then_some(n);
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

/// `GET /prefix?list` and `?unlinked`.
pub async fn list(app: &Arc<App>, prefix: Vec<u8>, query: &str) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query)?;
    let want = if q.unlinked {
        State::Unlinked
    } else {
        State::Live
    };
    let index = app.index.clone();
    let page = tokio::task::spawn_blocking(move || {
        index.scan(&prefix, q.start.as_deref(), q.limit, MAX_LIST, |r| {
            r.state == want
        })
    })
    .await
    .map_err(|e| ApiError::BadRequest(format!("listing aborted: {e}")))??;
    if page.too_large {
        return Err(ApiError::TooLarge);
    }
    let text = |k: Vec<u8>| String::from_utf8_lossy(&k).into_owned();
    let body = ListResponse {
        next: page.next.map(text).unwrap_or_default(),
        keys: page.keys.into_iter().map(text).collect(),
    };
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries() {
        assert_eq!(
            ListQuery::parse("list").unwrap(),
            ListQuery {
                unlinked: false,
                start: None,
                limit: None
            }
        );
        assert_eq!(
            ListQuery::parse("unlinked&start=/a%20b&limit=10").unwrap(),
            ListQuery {
                unlinked: true,
                start: Some(b"/a b".to_vec()),
                limit: Some(10)
            }
        );
        assert_eq!(ListQuery::parse("list&limit=0").unwrap().limit, None);
        assert_eq!(
            ListQuery::parse("list&start=/x+y")
                .unwrap()
                .start
                .as_deref(),
            Some(&b"/x y"[..])
        );
        for bad in [
            "",
            "limit=3&list",
            "foo",
            "list&limit=-1",
            "list&limit=x",
            "list&limit=",
        ] {
            assert!(ListQuery::parse(bad).is_err(), "{bad}");
        }
    }
}
